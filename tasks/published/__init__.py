"""What earlier versions published, as a build reads it: the published index (every published item's
signatures, group, split and captions, one part per version), which dedupe, the leakage guard and the
commit share."""
