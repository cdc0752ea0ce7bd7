"""Lightning callbacks: when to evaluate or draw, and where to write; the maths lives elsewhere."""
