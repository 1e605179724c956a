"""What a user's call does and gives back: `pipeline` (summarise), `completion`,
`embeddings`, `checkpoints`, `session` (experiments, cache info, export), `results`,
`history` (finding and rebuilding recorded runs) and `compare`.

Named `run`, not `runs`: `kura_magic.runs` is the public function that lists the history."""
