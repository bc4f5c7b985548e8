"""Statistics of judged results: win rates, LC, annotations, rankings, agreement, pass@k, t-intervals."""
