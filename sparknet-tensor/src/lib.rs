//! SparkNet's lightweight N-dimensional array (filled by the foundation issue).
