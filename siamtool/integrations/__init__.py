"""siamtool inside the community's evaluation toolkits: `got10k` (the got10k toolkit's `Tracker`) and `vot`
(a TraX server for the VOT toolkit). Both wrap `siamtool.load_tracker`, so they track exactly like the
Python API and `siamtool track` do; each imports its toolkit's package (an optional extra) only when used."""
