//! The client side: connecting over every resolved address, framed helpers, stdin/stdout piping.
