//! ds4-tokenizer
