//! Rendering the built-in world: a pinhole camera model and a ray-casting renderer for
//! RGB, depth, the arm-only conditioning video and object-only frames.

pub mod camera;
pub mod raster;
pub mod scene;

pub use camera::{CameraSpec, PinholeCamera};
pub use raster::{
    render, render_modes, render_modes_uncached, table, Frame, Layer, Primitive, RenderMode,
    RenderOptions, Shape,
};
