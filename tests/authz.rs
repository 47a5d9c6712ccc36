//! The authorization matrix: every entry point of the table, as every kind of caller, via
//! the leader and via a follower (written next).
