"""Many runs at once: the batched tabular simulator and parallel sweeps (see README, "Sweeps")."""
