"""The ground floor: what a plan is (schedule), what it costs (cost model, budgets, the paper's rule).

No torch at import; every other floor builds on it."""
