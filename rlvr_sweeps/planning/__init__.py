"""What a sweep plans before it runs: the cluster preflight (preflight) and the two-stage learning-rate search
(search). Light: the launchers and the plan import it on a login node."""
