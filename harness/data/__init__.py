"""Training data: loading and row checks, tokenization (TRL's rule), collate, packing, filters, audit."""
