"""Models: profiles (what a model is), finding and building them, their adapters, devices and profiler."""
