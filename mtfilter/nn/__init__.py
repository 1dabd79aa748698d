"""The model in plain PyTorch, importable without Lightning: grouped layers (`layers`), the MLP in
every layout (`model`), the per-bit losses (`losses`), the bit-mapping targets (`targets`), the
counter-based random numbers (`counter_rng`), stacked replicas' seeds and rates (`replicas`) and
the representational floor (`floor`)."""
