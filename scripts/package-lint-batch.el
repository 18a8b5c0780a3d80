;;; package-lint-batch.el --- Run package-lint and fail on any real finding  -*- lexical-binding: t; -*-

;;; Commentary:

;; Usage: emacs -Q --batch -L PACKAGE-LINT-DIR -l scripts/package-lint-batch.el
;;          MAIN-FILE OTHER-FILE...
;; Like `package-lint-batch-and-exit' with warnings failing too, except
;; for findings that older package-lint releases (Debian's 0.16) make
;; wrongly:
;; - depending on Emacs 28.1 makes a package "uninstallable in all
;;   released Emacs versions" (the release predates Emacs 28);
;; - `org-babel-header-args:LANG' and `org-babel-expand-body:LANG', the
;;   names Babel looks up for a language's header arguments and expanded
;;   body, lack the package prefix (the release allows their siblings
;;   `org-babel-execute:' and `org-babel-default-header-args:', but not
;;   these).

;;; Code:

(require 'package-lint)

(defconst package-lint-batch-stale-findings
  '("This makes the package uninstallable in all released Emacs versions."
    "\"org-babel-header-args:chat-ai\" doesn't start with package's prefix \"ob-chat-ai\"."
    "`org-babel-header-args:chat-ai' contains a non-standard separator `:', \
use hyphens instead (see Elisp Coding Conventions)."
    "\"org-babel-expand-body:chat-ai\" doesn't start with package's prefix \"ob-chat-ai\"."
    "`org-babel-expand-body:chat-ai' contains a non-standard separator `:', \
use hyphens instead (see Elisp Coding Conventions).")
  "Findings that old package-lint releases make wrongly.")

(let ((package-lint-main-file (car command-line-args-left))
      (findings 0))
  (dolist (file command-line-args-left)
    (with-temp-buffer
      (insert-file-contents file t)
      (emacs-lisp-mode)
      (pcase-dolist (`(,line ,column ,type ,message) (package-lint-buffer))
        (unless (member message package-lint-batch-stale-findings)
          (setq findings (1+ findings))
          (message "%s:%d:%d: %s: %s" file line column type message)))))
  (setq command-line-args-left nil)
  (kill-emacs (if (zerop findings) 0 1)))

;;; package-lint-batch.el ends here
