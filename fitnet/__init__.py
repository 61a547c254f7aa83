"""CNN that measures Sersic parameters (mag, n, re, q) of galaxy stamps in one forward pass."""
