pub mod dot;
pub mod quant;
