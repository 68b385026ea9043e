"""The service's endpoints, grouped by what they serve."""
