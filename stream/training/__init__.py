"""The training flow: labelled data in, a checked challenger and a promotion decision out."""
