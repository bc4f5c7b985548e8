"""The spec: typed models, spec files and --set, problem messages, the grid of trials and their ids."""
