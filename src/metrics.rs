//! Counters shared by the server, the bench and progress output.
