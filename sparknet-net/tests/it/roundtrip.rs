//! Round trips (filled below).
