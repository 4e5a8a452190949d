"""The audit: what enforce would change or reject over manifests or a live cluster, blast radius,
PodDisruptionBudget checks and the report writers."""
