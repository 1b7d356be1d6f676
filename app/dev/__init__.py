"""Development tools: the local broker, the benchmark, the demo and storefront, the drift
simulator, the replay and synthetic data. The product never imports them."""
