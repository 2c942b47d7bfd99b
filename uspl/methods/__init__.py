"The methods: the registry and its base class, USPL, EZ-VSL, LVS, ICL."
