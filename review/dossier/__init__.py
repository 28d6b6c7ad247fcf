"""Evidence dossiers: per-site pages an investigator can attach to a report (HTML and one PDF),
with a manifest that ``sitewatch verify`` checks (:mod:`review.dossier.build`)."""
