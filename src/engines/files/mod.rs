pub mod component;
