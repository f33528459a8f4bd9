"""sample_smart."""
