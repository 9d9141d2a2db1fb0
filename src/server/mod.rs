//! The async server: accept loop, connection limits, idle timeouts and graceful shutdown.
