"""The two-way sync between the warehouse and Twenty: mapping, state, push, pull, runs."""
