"""Methods under test (HTTM, MixA-Q) and the seam types they plug into."""
