"""The saga's steps and compensations, one module each: a function imports only its own step
(issue 12: a cold start loads one step's dependencies, not all six)."""
