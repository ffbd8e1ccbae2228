//! Operations on whole hook trees, each a visitor over the one traversal
//! ([`HookNode::walk`] / [`HookNode::walk_mut`]).

use std::sync::Arc;

use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};

use crate::calls::{CallReport, HookCalls};
use crate::hook::{HookFn, IntoHook};
use crate::node::{HookNode, Schema, Segment, Visitor, VisitorMut, join_segments};
use crate::path::{IndexedPath, PathError, ResolvedPath, glob_matches, resolve, schema_at};
use crate::rank::{AnyRankHook, at_rank};
use crate::render::Renderer;
use crate::site::{FwdStage, Stage};
use crate::{HookError, Path, Site, Value};

/// One site of a tree, as iteration yields it: where it is, and what the
/// derive's attributes say about it (its schema is the one source of site
/// metadata).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteInfo {
    /// The dotted string path.
    pub path: String,
    /// The rank of the site's tensors.
    pub rank: usize,
    /// The shape's dimension letters, comma-separated (`"B,S,H,d"`), when
    /// the tree declares it (`#[hooks(shape = "...")]`).
    pub shape: Option<&'static str>,
    /// Whether the site is called inside the blocks, with a layer in its
    /// context (`#[hooks(per_layer)]` on it or on a node above it).
    pub per_layer: bool,
    /// The doc comment of the site's field (first paragraph; empty if none).
    pub doc: &'static str,
}

impl SiteInfo {
    /// The shape's dimension letters (`["B", "S", "H", "d"]`); empty when
    /// the tree declares no shape.
    pub fn dims(&self) -> impl Iterator<Item = &'static str> + use<> {
        self.shape.into_iter().flat_map(|s| s.split(','))
    }
}

/// What every hook tree can do. Implemented for every [`HookNode`]: derived
/// collections, sites, autoencoder splices.
///
/// ```
/// use burn_ndarray::NdArray;
/// use hooks_core::{HookCollection, HookTree, Site, Zero, FwdStage};
///
/// #[derive(HookCollection, Clone, Default)]
/// struct Mlp<B: burn::tensor::backend::Backend> {
///     pre_act: Site<B, 3>,
///     post_act: Site<B, 3>,
/// }
///
/// let mut hooks = Mlp::<NdArray>::default();
/// assert!(hooks.is_empty());
/// hooks.bind("layer", 3).unwrap();
/// assert!(hooks.bind("layer", 4).is_err()); // a key binds once
/// hooks.append_all(FwdStage::Fwd, Zero);
/// assert!(!hooks.is_empty());
/// let paths: Vec<_> = hooks.sites().into_iter().map(|s| s.path).collect();
/// assert_eq!(paths, ["pre_act", "post_act"]);
/// let err = hooks.append_to_path("post_atc.fwd", Zero).err().unwrap();
/// assert!(err.to_string().contains("did you mean `post_act`?"));
/// ```
pub trait HookTree: HookNode {
    /// Binds `key` on every stage of every site. Fails, changing nothing, if
    /// any stage already has it (the error names the first such site).
    fn bind(&mut self, key: &str, value: impl Into<Value>) -> Result<&mut Self, HookError> {
        let value = value.into();
        if let Some(site) = first_site_where(self, |b| b.contains(key)) {
            return Err(HookError::AlreadyBound {
                key: key.to_string(),
                site: Some(site),
            });
        }
        self.walk_mut(&mut ForEachSite(|_: &[&str], s: &mut dyn SiteBindings| {
            s.bind_all(key, &value)
        }));
        Ok(self)
    }

    /// Unbinds `key` from every stage of every site. Fails, changing nothing,
    /// if any stage lacks it.
    fn unbind(&mut self, key: &str) -> Result<&mut Self, HookError> {
        if let Some(site) = first_site_where(self, |b| !b.contains(key)) {
            return Err(HookError::NotBound {
                key: key.to_string(),
                site: Some(site),
            });
        }
        self.walk_mut(&mut ForEachSite(|_: &[&str], s: &mut dyn SiteBindings| {
            s.unbind_all(key)
        }));
        Ok(self)
    }

    /// Whether no site has a hook.
    fn is_empty(&self) -> bool {
        struct AllEmpty(bool);
        impl<B: Backend> Visitor<B> for AllEmpty {
            fn enter(&mut self, _: Segment) -> bool {
                self.0
            }
            fn site<const D: usize>(&mut self, site: &Site<B, D>) {
                self.0 &= site.is_empty();
            }
        }
        let mut v = AllEmpty(true);
        self.walk(&mut v);
        v.0
    }

    /// Appends one rank-generic forward hook to a stage of every site; the
    /// hook sees each site's path in [`Ctx::site`](crate::Ctx::site).
    fn append_all<H: AnyRankHook<Self::Backend>>(&mut self, stage: FwdStage, hook: H) -> &mut Self {
        let hook = Arc::new(hook);
        self.walk_mut(&mut AppendFwd {
            path: Vec::new(),
            target: None,
            stage,
            hook,
        });
        self
    }

    /// Appends one rank-generic gradient hook to the `bwd` stage of every site.
    fn append_all_grad<H>(&mut self, hook: H) -> &mut Self
    where
        Self::Backend: AutodiffBackend,
        H: AnyRankHook<<Self::Backend as AutodiffBackend>::InnerBackend>,
    {
        let hook = Arc::new(hook);
        self.walk_mut(&mut AppendGrad {
            path: Vec::new(),
            target: None,
            hook,
        });
        self
    }

    /// Appends a rank-generic forward hook at a string path ending in a stage,
    /// e.g. `"resid.torso.post_mlp.fwd"`. `bwd` paths are refused (they need
    /// [`append_grad_to_path`](Self::append_grad_to_path)).
    fn append_to_path<H: AnyRankHook<Self::Backend>>(
        &mut self,
        path: &str,
        hook: H,
    ) -> Result<&mut Self, HookError> {
        let (resolved, stage) = resolve_stage(Self::schema(), path)?;
        locate(self, &resolved, path)?;
        let stage = match stage {
            Stage::Fwd => FwdStage::Fwd,
            Stage::Fwd2 => FwdStage::Fwd2,
            Stage::Bwd => {
                return Err(HookError::GradStageNeedsGradHook {
                    path: path.to_string(),
                });
            }
        };
        self.walk_mut(&mut AppendFwd {
            path: Vec::new(),
            target: Some(&resolved.segments),
            stage,
            hook: Arc::new(hook),
        });
        Ok(self)
    }

    /// Appends a rank-generic gradient hook at a string path ending in `.bwd`.
    fn append_grad_to_path<H>(&mut self, path: &str, hook: H) -> Result<&mut Self, HookError>
    where
        Self::Backend: AutodiffBackend,
        H: AnyRankHook<<Self::Backend as AutodiffBackend>::InnerBackend>,
    {
        let (resolved, stage) = resolve_stage(Self::schema(), path)?;
        locate(self, &resolved, path)?;
        if stage != Stage::Bwd {
            return Err(PathError::UnknownStage {
                segment: stage.name().to_string(),
                site: resolved.node_path(),
                path: path.to_string(),
                suggestion: Some("bwd".to_string()),
            }
            .into());
        }
        self.walk_mut(&mut AppendGrad {
            path: Vec::new(),
            target: Some(&resolved.segments),
            hook: Arc::new(hook),
        });
        Ok(self)
    }

    /// Appends a hook written for rank `D` at a string path ending in `fwd` or
    /// `fwd2`; a site of another rank is an error naming both ranks.
    fn append_typed_to_path<const D: usize>(
        &mut self,
        path: &str,
        hook: impl IntoHook<Tensor<Self::Backend, D>>,
    ) -> Result<&mut Self, HookError> {
        let (resolved, stage) = resolve_stage(Self::schema(), path)?;
        locate(self, &resolved, path)?;
        let rank = resolved.rank.expect("resolve_stage returns sites");
        if rank != D {
            return Err(HookError::RankMismatch {
                site: resolved.node_path(),
                site_rank: rank,
                hook: D,
            });
        }
        let stage = match stage {
            Stage::Fwd => FwdStage::Fwd,
            Stage::Fwd2 => FwdStage::Fwd2,
            Stage::Bwd => {
                return Err(HookError::GradStageNeedsGradHook {
                    path: path.to_string(),
                });
            }
        };
        let mut hook = Some(hook.into_hook());
        self.walk_mut(&mut AtSite {
            path: Vec::new(),
            target: &resolved.segments,
            f: |site: &mut dyn std::any::Any| {
                if let (Some(site), Some(h)) =
                    (site.downcast_mut::<Site<Self::Backend, D>>(), hook.take())
                {
                    site.fwd_stage_mut(stage).append(h);
                }
            },
        });
        Ok(self)
    }

    /// Every site with its path, rank and declared metadata (shape,
    /// `per_layer`, doc), in declaration order.
    fn sites(&self) -> Vec<SiteInfo> {
        struct Collect(Schema, Vec<SiteInfo>);
        impl<B: Backend> SiteWithPath<B> for Collect {
            fn site<const D: usize>(&mut self, path: &[Segment], _: &Site<B, D>) {
                let meta = self.0.site_meta(path);
                self.1.push(SiteInfo {
                    path: join_segments(path),
                    rank: D,
                    shape: meta.shape,
                    per_layer: meta.per_layer,
                    doc: meta.doc,
                });
            }
        }
        let mut v = Tracked::new(Collect(Self::schema(), Vec::new()));
        self.walk(&mut v);
        v.inner.1
    }

    /// The sites whose paths match any of `patterns` (see
    /// [`glob_matches`](crate::path::glob_matches)); a pattern that matches
    /// nothing is an error, with a suggestion when it looks like a typo.
    fn sites_matching(&self, patterns: &[&str]) -> Result<Vec<SiteInfo>, HookError> {
        let all = self.sites();
        for p in patterns {
            if !all.iter().any(|s| glob_matches(p, &s.path)) {
                // Reuse the path checker for the precise message.
                resolve(&Self::schema(), p)?;
                return Err(PathError::NotASite {
                    path: p.to_string(),
                    available: Vec::new(),
                }
                .into());
            }
        }
        Ok(all
            .into_iter()
            .filter(|s| patterns.iter().any(|p| glob_matches(p, &s.path)))
            .collect())
    }

    /// Checks a string path against this tree's schema.
    fn resolve(path: &str) -> Result<ResolvedPath, PathError> {
        resolve(&Self::schema(), path)
    }

    /// Every appended hook with how often it ran and at which layers, in
    /// tree order (site, then `fwd`, `bwd`, `fwd2`); hooks inside groups are
    /// listed as `group › hook`. Counts add up over every call since the hook
    /// was appended or [`reset_hook_calls`](Self::reset_hook_calls); clones
    /// of a tree share them, as they share the hook functions.
    fn hook_calls(&self) -> Vec<HookCalls> {
        struct Collect(Vec<HookCalls>);
        impl<B: Backend> SiteWithPath<B> for Collect {
            fn site<const D: usize>(&mut self, path: &[Segment], site: &Site<B, D>) {
                let path = join_segments(path);
                let mut report = CallReport::new(path.clone(), Stage::Fwd);
                HookFn::report_calls(&site.fwd, &mut report);
                self.0.extend(report.finish());
                let mut report = CallReport::new(path.clone(), Stage::Bwd);
                site.bwd.report_calls(&mut report);
                self.0.extend(report.finish());
                let mut report = CallReport::new(path, Stage::Fwd2);
                HookFn::report_calls(&site.fwd2, &mut report);
                self.0.extend(report.finish());
            }
        }
        let mut v = Tracked::new(Collect(Vec::new()));
        self.walk(&mut v);
        v.inner.0
    }

    /// Strict mode: an error naming every appended hook that has not run
    /// (a layer filter for a layer the model does not have, a hook on a site
    /// the forward pass never called, a gradient hook before any backward
    /// pass). Call it after the passes the hooks were meant for.
    fn require_all_fired(&self) -> Result<(), HookError> {
        let never: Vec<HookCalls> = self
            .hook_calls()
            .into_iter()
            .filter(|h| h.calls == 0)
            .collect();
        if never.is_empty() {
            Ok(())
        } else {
            Err(HookError::NeverFired { hooks: never })
        }
    }

    /// Sets every hook's call count back to zero.
    fn reset_hook_calls(&self) {
        struct Reset;
        impl<B: Backend> Visitor<B> for Reset {
            fn site<const D: usize>(&mut self, site: &Site<B, D>) {
                HookFn::reset_calls(&site.fwd);
                site.bwd.reset_calls();
                HookFn::reset_calls(&site.fwd2);
            }
        }
        self.walk(&mut Reset);
    }

    /// The node a typed path names.
    fn at<T: HookNode>(&self, path: &Path<Self, T>) -> &T {
        path.get(self)
    }

    /// The node a typed path names, mutably.
    fn at_mut<T: HookNode>(&mut self, path: &Path<Self, T>) -> &mut T {
        path.get_mut(self)
    }

    /// The node a typed path through lists names (`path!(Net<B>:
    /// blocks[3].out)`), or the error a string path would get when an index
    /// is past the end of its list.
    fn try_at<T: HookNode>(&self, path: &IndexedPath<Self, T>) -> Result<&T, HookError> {
        Ok(path.get(self)?)
    }

    /// [`try_at`](Self::try_at), mutably.
    fn try_at_mut<T: HookNode>(
        &mut self,
        path: &IndexedPath<Self, T>,
    ) -> Result<&mut T, HookError> {
        Ok(path.get_mut(self)?)
    }

    /// A readable rendering in the reference's `__repr__` shape: four-space
    /// indentation, each node under its full dotted path, bound values after
    /// a stage's name, and below each stage its hooks.
    fn render(&self) -> String {
        let name = match Self::schema().present() {
            Schema::Collection { type_name, .. } => type_name,
            Schema::Site { .. } => "Site",
            Schema::List { .. } => "List",
            Schema::Optional { .. } => unreachable!("present() removes Option wrappers"),
        };
        render_node(self, name)
    }
}

impl<T: HookNode> HookTree for T {}

pub(crate) fn render_node<T: HookNode>(node: &T, name: &str) -> String {
    struct Render {
        out: Renderer,
        path: Vec<Segment>,
    }
    impl<B: Backend> Visitor<B> for Render {
        fn enter(&mut self, segment: Segment) -> bool {
            self.path.push(segment);
            self.out.line(&join_segments(&self.path));
            self.out.indent();
            true
        }
        fn exit(&mut self, _: Segment) {
            self.path.pop();
            self.out.outdent();
        }
        fn absent(&mut self) {
            self.out.line("(none)");
        }
        fn site<const D: usize>(&mut self, site: &Site<B, D>) {
            let prefix = if self.path.is_empty() {
                String::new()
            } else {
                format!("{}.", join_segments(&self.path))
            };
            site.fwd.render_as(&format!("{prefix}fwd"), &mut self.out);
            site.bwd.render_as(&format!("{prefix}bwd"), &mut self.out);
            site.fwd2.render_as(&format!("{prefix}fwd2"), &mut self.out);
        }
    }
    let mut r = Render {
        out: Renderer::new(),
        path: Vec::new(),
    };
    r.out.line(name);
    r.out.indent();
    node.walk(&mut r);
    r.out.finish()
}

fn resolve_stage(schema: Schema, path: &str) -> Result<(ResolvedPath, Stage), PathError> {
    let resolved = resolve(&schema, path)?;
    match (resolved.rank, resolved.stage) {
        (Some(_), Some(stage)) => Ok((resolved, stage)),
        (Some(_), None) => Err(PathError::MissingStage {
            path: path.to_string(),
        }),
        (None, _) => Err(PathError::NotASite {
            path: path.to_string(),
            available: schema_at(&schema, &resolved.segments).child_names(),
        }),
    }
}

/// What a [`Tracked`] visitor does at each site, told the site's path.
trait SiteWithPath<B: Backend> {
    fn site<const D: usize>(&mut self, path: &[Segment], site: &Site<B, D>);
}

/// A visitor that keeps the path of the node it is in, for operations that
/// only care about sites and their paths.
struct Tracked<V> {
    path: Vec<Segment>,
    inner: V,
}

impl<V> Tracked<V> {
    fn new(inner: V) -> Self {
        Tracked {
            path: Vec::new(),
            inner,
        }
    }
}

impl<B: Backend, V: SiteWithPath<B>> Visitor<B> for Tracked<V> {
    fn enter(&mut self, segment: Segment) -> bool {
        self.path.push(segment);
        true
    }
    fn exit(&mut self, _: Segment) {
        self.path.pop();
    }
    fn site<const D: usize>(&mut self, site: &Site<B, D>) {
        self.inner.site(&self.path, site);
    }
}

/// Checks that the site `resolved` names is in `tree`: what [`resolve`]
/// cannot know from the schema, a `Vec`'s length and whether an `Option`
/// holds a node, read off the tree by one pruned walk.
fn locate<T: HookNode>(tree: &T, resolved: &ResolvedPath, path: &str) -> Result<(), PathError> {
    struct Probe<'t> {
        target: &'t [Segment],
        depth: usize,
        reached: usize,
        found: bool,
        /// The length of the list at each depth along the target.
        lens: Vec<Option<usize>>,
        absent_at: Option<usize>,
    }
    impl<B: Backend> Visitor<B> for Probe<'_> {
        fn enter(&mut self, segment: Segment) -> bool {
            let on_path = self.target.get(self.depth) == Some(&segment);
            if on_path {
                self.depth += 1;
                self.reached = self.reached.max(self.depth);
            }
            on_path
        }
        fn exit(&mut self, _: Segment) {
            self.depth -= 1;
        }
        fn list(&mut self, len: usize) {
            self.lens[self.depth] = Some(len);
        }
        fn absent(&mut self) {
            self.absent_at = Some(self.depth);
        }
        fn site<const D: usize>(&mut self, _: &Site<B, D>) {
            self.found |= self.depth == self.target.len();
        }
    }
    let target = &resolved.segments[..];
    let mut probe = Probe {
        target,
        depth: 0,
        reached: 0,
        found: false,
        lens: vec![None; target.len() + 1],
        absent_at: None,
    };
    tree.walk(&mut probe);
    if probe.found {
        return Ok(());
    }
    let at = probe.reached;
    let prefix = join_segments(&target[..at]);
    if probe.absent_at == Some(at) {
        return Err(PathError::Absent {
            optional: prefix,
            path: path.to_string(),
        });
    }
    match (probe.lens[at], target.get(at)) {
        (Some(len), Some(Segment::Index(index))) => Err(PathError::IndexOutOfRange {
            list: prefix,
            len,
            index: *index,
            path: path.to_string(),
        }),
        _ => Err(PathError::NotASite {
            path: path.to_string(),
            available: Vec::new(),
        }),
    }
}

/// The bindings of a site's three stages, without the rank.
trait SiteBindings {
    fn bind_all(&mut self, key: &str, value: &Value);
    fn unbind_all(&mut self, key: &str);
    fn any_stage(&self, pred: &dyn Fn(&crate::Bindings) -> bool) -> bool;
}

impl<B: Backend, const D: usize> SiteBindings for Site<B, D> {
    fn bind_all(&mut self, key: &str, value: &Value) {
        // Checked beforehand by the caller, so these cannot fail.
        let _ = self.fwd.bind(key, value.clone());
        let _ = self.bwd.bind(key, value.clone());
        let _ = self.fwd2.bind(key, value.clone());
    }
    fn unbind_all(&mut self, key: &str) {
        let _ = self.fwd.unbind(key);
        let _ = self.bwd.unbind(key);
        let _ = self.fwd2.unbind(key);
    }
    fn any_stage(&self, pred: &dyn Fn(&crate::Bindings) -> bool) -> bool {
        pred(self.fwd.bindings()) || pred(self.bwd.bindings()) || pred(self.fwd2.bindings())
    }
}

/// Calls `f(path, site)` on every site.
struct ForEachSite<F>(F);

impl<B: Backend, F: FnMut(&[&str], &mut dyn SiteBindings)> VisitorMut<B> for ForEachSite<F> {
    fn site<const D: usize>(&mut self, site: &mut Site<B, D>) {
        (self.0)(&[], site);
    }
}

fn first_site_where<T: HookNode>(
    tree: &T,
    pred: impl Fn(&crate::Bindings) -> bool,
) -> Option<String> {
    struct Find<P> {
        path: Vec<Segment>,
        found: Option<String>,
        pred: P,
    }
    impl<B: Backend, P: Fn(&crate::Bindings) -> bool> Visitor<B> for Find<P> {
        fn enter(&mut self, segment: Segment) -> bool {
            if self.found.is_some() {
                return false;
            }
            self.path.push(segment);
            true
        }
        fn exit(&mut self, _: Segment) {
            self.path.pop();
        }
        fn site<const D: usize>(&mut self, site: &Site<B, D>) {
            if self.found.is_none() && site.any_stage(&self.pred) {
                self.found = Some(join_segments(&self.path));
            }
        }
    }
    let mut v = Find {
        path: Vec::new(),
        found: None,
        pred,
    };
    tree.walk(&mut v);
    v.found
}

/// Descends only along `target` (all sites when `None`).
fn descend(path: &mut Vec<Segment>, target: Option<&[Segment]>, segment: Segment) -> bool {
    let ok = match target {
        None => true,
        Some(t) => t.get(path.len()) == Some(&segment),
    };
    if ok {
        path.push(segment);
    }
    ok
}

struct AppendFwd<'t, H> {
    path: Vec<Segment>,
    target: Option<&'t [Segment]>,
    stage: FwdStage,
    hook: Arc<H>,
}

impl<B: Backend, H: AnyRankHook<B>> VisitorMut<B> for AppendFwd<'_, H> {
    fn enter(&mut self, segment: Segment) -> bool {
        descend(&mut self.path, self.target, segment)
    }
    fn exit(&mut self, _: Segment) {
        self.path.pop();
    }
    fn site<const D: usize>(&mut self, site: &mut Site<B, D>) {
        let name: Arc<str> = join_segments(&self.path).into();
        site.fwd_stage_mut(self.stage)
            .append(at_rank::<B, D, H>(self.hook.clone(), Some(name)));
    }
}

struct AppendGrad<'t, H> {
    path: Vec<Segment>,
    target: Option<&'t [Segment]>,
    hook: Arc<H>,
}

impl<B: AutodiffBackend, H: AnyRankHook<B::InnerBackend>> VisitorMut<B> for AppendGrad<'_, H> {
    fn enter(&mut self, segment: Segment) -> bool {
        descend(&mut self.path, self.target, segment)
    }
    fn exit(&mut self, _: Segment) {
        self.path.pop();
    }
    fn site<const D: usize>(&mut self, site: &mut Site<B, D>) {
        let name: Arc<str> = join_segments(&self.path).into();
        site.bwd.append(at_rank::<B::InnerBackend, D, H>(
            self.hook.clone(),
            Some(name),
        ));
    }
}

/// Calls `f` on the one site at `target`, as `dyn Any` for a rank check.
struct AtSite<'t, F> {
    path: Vec<Segment>,
    target: &'t [Segment],
    f: F,
}

impl<B: Backend, F: FnMut(&mut dyn std::any::Any)> VisitorMut<B> for AtSite<'_, F> {
    fn enter(&mut self, segment: Segment) -> bool {
        descend(&mut self.path, Some(self.target), segment)
    }
    fn exit(&mut self, _: Segment) {
        self.path.pop();
    }
    fn site<const D: usize>(&mut self, site: &mut Site<B, D>) {
        (self.f)(site);
    }
}
