// Loaded after require.js and before the Jupyter widget manager (embed-amd.js), both served
// from _static/vendor/ (see book/build.py).
(function () {
  // The manager finds its icon fonts beside the AMD module it is named as; point that name at
  // the copy served with the book instead of <page folder>/@jupyter-widgets/...
  var here = document.currentScript.src;
  var base = here.slice(0, here.lastIndexOf("/") + 1) + "vendor/html-manager";
  require.config({ paths: { "@jupyter-widgets/html-manager/dist": base } });
  // The manager typesets widget labels with MathJax 2's MathJax.Hub.Queue; the book loads
  // MathJax 3 (only on pages with formulas), which has typesetPromise instead.
  document.addEventListener("DOMContentLoaded", function () {
    var mj = window.MathJax;
    if (mj && !mj.Hub) {
      mj.Hub = {
        Queue: function (job) {
          var el = job && job[2];
          var ready = mj.startup && mj.startup.promise ? mj.startup.promise : Promise.resolve();
          ready.then(function () { if (mj.typesetPromise && el) { return mj.typesetPromise([el]); } });
        },
      };
    }
  });
})();
