//! quant (under construction)
