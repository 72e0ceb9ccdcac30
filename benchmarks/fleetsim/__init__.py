"""The fleet simulator's parts (benchmarks/fleet_sim.py runs them): links, tracker, peers, event loop."""
