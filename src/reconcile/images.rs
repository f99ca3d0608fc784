//! The controller's image step: before a create, the image a spec names
//! must be on the node. What the controller asks of the image room is
//! [`ImageOps`]; the real one pulls in the background and wakes the handle
//! when the pull ends, so a slow registry never holds a worker.

use std::collections::BTreeMap;

use super::plan::{Plan, Step};
use crate::api::{self, ContainerSpec, Handle, Reason, Sidecar};
use crate::containerizer::create::ImageLayers;
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

/// The images a plan's steps make things from, each held until the depot
/// names it: the container's, for a create, and the image of each pea
/// that a step starts.
#[derive(Debug, Default)]
pub(super) struct PlanImages {
    /// The container's image.
    pub main: Option<ReadyImage>,
    /// Each pea's image, by sidecar name.
    pub peas: BTreeMap<String, ReadyImage>,
}

impl PlanImages {
    /// The layers pea `name` is made from, when it is made from an image.
    pub fn pea(&self, name: &str) -> Option<ImageLayers> {
        self.peas.get(name).map(|r| ImageLayers {
            image: r.image.clone(),
            lowerdirs: r.lowerdirs.clone(),
        })
    }
}

/// The sidecars of `spec` with an image that a step of `plan` starts, by
/// index: a pea that is not running is made then, from its image. (One
/// that runs takes its restart as an exec; its image is looked at all the
/// same, as the kubelet looks at a container's at each start.)
pub(super) fn peas_to_start<'a>(spec: &'a ContainerSpec, plan: &Plan) -> Vec<(usize, &'a Sidecar)> {
    let mut out: Vec<(usize, &Sidecar)> = plan
        .steps
        .iter()
        .filter_map(|step| match *step {
            Step::StartSidecar { index } | Step::RestartSidecar { index, .. } => Some(index),
            _ => None,
        })
        .filter_map(|index| spec.sidecars.get(index).map(|s| (index, s)))
        .filter(|(_, s)| s.image.is_some())
        .collect();
    out.sort_by_key(|(index, _)| *index);
    out.dedup_by_key(|(index, _)| *index);
    out
}

/// The key the image room remembers pea `name` of `handle` by: what it
/// was told, apart from the container's own image.
pub(super) fn pea_image_key(handle: &Handle, name: &str) -> Handle {
    let plain = format!("{handle}+pea-{name}");
    Handle::new(&plain).unwrap_or_else(|_| {
        let hash = api::handle::fnv1a64(plain.as_bytes());
        // Only hex digits and a known prefix: always a handle.
        Handle::new(format!("pea+{hash:016x}")).unwrap_or_else(|_| handle.clone())
    })
}

/// A wait for pea `index`'s image, naming its field.
pub(super) fn pea_wait(index: usize, wait: ImageWait) -> ImageWait {
    ImageWait {
        message: format!("spec.sidecars[{index}].image: {}", wait.message),
        ..wait
    }
}

/// Why pea `index` of `spec`, over its image's `defaults`, cannot run;
/// as [`config_error`] for the container's image.
pub(super) fn pea_config_error(
    spec: &ContainerSpec,
    index: usize,
    sidecar: &Sidecar,
    defaults: &api::ImageDefaults,
) -> Option<ImageWait> {
    let wait = config_error(&sidecar.alone(spec), defaults)?;
    Some(ImageWait {
        message: format!("spec.sidecars[{index}]: {}", wait.message),
        ..wait
    })
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
