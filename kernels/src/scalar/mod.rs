pub mod dot;
pub mod quant;
pub mod vec;
