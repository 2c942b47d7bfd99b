"Trained methods evaluated: `uspl compare` (methods over seeds, with their tables) and the refinement grid searches."
