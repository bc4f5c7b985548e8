"""Statistics of judged results: win rates, LC win rates, annotations, rankings, agreement, pass@k."""
