"The paper's components: encoders, MMICL (Sec. 3.1), tri-map and affinities, SMR (Sec. 3.2), SPS (Sec. 3.3)."
