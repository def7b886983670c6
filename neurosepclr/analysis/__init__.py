"""Analysis of trained runs: embeddings, subtyping, saliency, atlas tables, reports, evaluation."""
