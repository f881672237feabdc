//! Corpus (filled below).
