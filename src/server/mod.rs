//! Drivers: connect the shard runtime's sockets, files and timers to the sans-IO cores.
