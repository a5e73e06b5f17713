"""Templates: protection profiles, the keyed transform and seal, and matching (gallery
normalisation, cohorts, prefilter, Identify's score model)."""
