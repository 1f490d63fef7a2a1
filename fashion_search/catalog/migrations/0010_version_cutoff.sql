-- Each model version's relevance cutoff: the cosine similarity below which a hit is weak, on
-- that version's own scale (calibrated on the judged queries once its embeddings are built:
-- fashion_search/learning/calibration.py). NULL until calibrated: nothing is cut.
ALTER TABLE catalog_versions ADD COLUMN min_score double precision;
