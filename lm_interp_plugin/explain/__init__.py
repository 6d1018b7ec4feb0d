"""Global explanations, one model at a time: attention heads as word pairs, FFN layers as concepts."""
