//! Codec configuration record readers (being built).
