"""What authz tells operators: metrics, the decision log, and the masking both rely on."""
