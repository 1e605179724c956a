"""One model call, from options to a cached answer: `gateway` (the one door to litellm),
`calls` (options, cache modes, leases, joining identical calls in flight) and `budget`
(prices and the `--max-cost` limit)."""
