"What a person uses: plots, the viewers, localize, the demo, the docs and the command line."
