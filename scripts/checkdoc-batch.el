;;; checkdoc-batch.el --- Run checkdoc on files and fail on any finding  -*- lexical-binding: t; -*-

;;; Commentary:

;; Usage: emacs -Q --batch -l scripts/checkdoc-batch.el FILE...
;; `checkdoc-file' alone reports findings but exits 0; this exits 1.

;;; Code:

(require 'checkdoc)

(defvar checkdoc-batch-findings 0
  "How many findings checkdoc reported.")

(setq checkdoc-create-error-function
      (lambda (text start _end &optional _unfixable)
        (setq checkdoc-batch-findings (1+ checkdoc-batch-findings))
        (message "%s:%d: %s" (buffer-file-name) (line-number-at-pos start) text)
        nil))

(setq checkdoc-diagnostic-buffer " *checkdoc*")

(dolist (file command-line-args-left)
  (checkdoc-file file))
(setq command-line-args-left nil)

(kill-emacs (if (zerop checkdoc-batch-findings) 0 1))

;;; checkdoc-batch.el ends here
