//! Services: what a connection does once accepted (echo, discard, chat).
