"""Training: the one trainer that calls the methods' hooks, and the alignment stage built on it."""
