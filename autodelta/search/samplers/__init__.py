"""Samplers that propose whole explicit plans: the model sampler (default) and the screened local one."""
