//! The controller's image step: before a create, the image a spec names
//! must be on the node. What the controller asks of the image room is
//! [`ImageOps`]; the real one pulls in the background and wakes the handle
//! when the pull ends, so a slow registry never holds a worker.

use crate::api::{self, ContainerSpec, Handle, Reason};
use crate::image::state::{ImageEvent, ImageState, ImageWait, ReadyImage, Wake};

/// What the controller asks of the image room.
pub trait ImageOps: Send + Sync + 'static {
    /// Where `spec`'s image stands for a create of `handle`, and what to
    /// announce. Starts a pull when the policy asks for one and none runs;
    /// `wake` is called when a pull `handle` waits on ends. `namespace` is
    /// the resource's, whose Secrets `spec.imagePullSecrets` names.
    fn ensure(
        &self,
        handle: &Handle,
        spec: &ContainerSpec,
        namespace: Option<&str>,
        wake: Wake,
    ) -> (ImageState, Vec<ImageEvent>);

    /// `handle` is gone: drop what is remembered of it.
    fn forget(&self, handle: &Handle);
}

/// No image store: every image waits, saying why (for tests of what
/// needs no image).
#[cfg(test)]
#[derive(Debug, Default, Clone, Copy)]
pub struct NoImages;

#[cfg(test)]
impl ImageOps for NoImages {
    fn ensure(
        &self,
        _handle: &Handle,
        _spec: &ContainerSpec,
        _namespace: Option<&str>,
        _wake: Wake,
    ) -> (ImageState, Vec<ImageEvent>) {
        let wait = ImageWait {
            reason: Reason::ErrImagePull,
            message: "this agent has no image store (--image-store)".into(),
            retry_in: None,
        };
        (ImageState::Waiting(wait), Vec::new())
    }

    fn forget(&self, _handle: &Handle) {}
}

/// The image step's verdict for one create.
#[derive(Debug)]
pub(super) enum ImageStep {
    /// The spec names no image.
    NotNeeded,
    /// Create from this.
    Ready(ReadyImage),
    /// Do nothing now; report this.
    Wait(ImageWait),
}

/// A ready image whose config and the spec together give nothing to run,
/// or a user that `runAsNonRoot` refuses, waits in
/// `CreateContainerConfigError` until the spec changes.
pub(super) fn check_command(spec: &ContainerSpec, ready: ReadyImage) -> ImageStep {
    match config_error(spec, &ready.image.defaults) {
        None => ImageStep::Ready(ready),
        Some(wait) => ImageStep::Wait(wait),
    }
}

/// Why `spec`'s main process, over an image's `defaults` (empty for a
/// rootfs directory), cannot be made, as the kubelet's
/// CreateContainerConfigError.
pub(super) fn config_error(
    spec: &ContainerSpec,
    defaults: &api::ImageDefaults,
) -> Option<ImageWait> {
    let checked = api::image::main_process(spec, defaults)
        .map_err(|e| e.to_string())
        .and_then(|main| {
            let user = main.as_ref().and_then(|p| p.user.as_deref());
            api::secctx::verify_non_root(spec, user)
        });
    checked.err().map(|message| ImageWait {
        reason: Reason::CreateContainerConfigError,
        message,
        retry_in: None,
    })
}

impl ImageOps for std::sync::Arc<crate::image::manager::Manager> {
    fn ensure(
        &self,
        handle: &Handle,
        spec: &ContainerSpec,
        namespace: Option<&str>,
        wake: Wake,
    ) -> (ImageState, Vec<ImageEvent>) {
        crate::image::manager::Manager::ensure(self, handle, spec, namespace, wake)
    }

    fn forget(&self, handle: &Handle) {
        crate::image::manager::Manager::forget(self, handle);
    }
}
