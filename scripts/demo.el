;;; demo.el --- Evaluate every chat-ai block of an Org file and print it  -*- lexical-binding: t; -*-

;;; Commentary:

;; Usage: emacs -Q --batch -L . --eval '(setq chat-ai-demo-helper "PATH")'
;;          --eval '(setq ob-chat-ai-provider "local")' -l scripts/demo.el FILE.org
;; Runs each chat-ai block of FILE.org in a copy of it, prints the copy
;; with its results, and exits 1 if any block failed.  With the openai
;; provider it needs OPENAI_API_KEY (or OPENAI_BASE_URL for another
;; server); CHAT_AI_MODEL sets the model.

;;; Code:

(require 'ob-chat-ai)

(defvar chat-ai-demo-helper "chat-ai"
  "The chat-ai helper program to run.")

(let ((file (pop command-line-args-left))
      (failures 0))
  (when (and (equal ob-chat-ai-provider "openai")
             (not (or (getenv "OPENAI_API_KEY") (getenv "OPENAI_BASE_URL"))))
    (message "make demo PROVIDER=openai needs OPENAI_API_KEY (and CHAT_AI_MODEL \
to pick a model), or OPENAI_BASE_URL for another OpenAI-compatible server; \
plain `make demo' needs neither.")
    (kill-emacs 2))
  (setq ob-chat-ai-helper-command (list chat-ai-demo-helper "--serve")
        org-confirm-babel-evaluate nil)
  (message "Asking %s%s..." ob-chat-ai-provider
           (if (equal ob-chat-ai-provider "local") " (SmolLM2-135M, on this machine)" ""))
  (with-temp-buffer
    (insert-file-contents file)
    (org-mode)
    (org-babel-map-src-blocks nil
      (when (equal lang "chat-ai")
        (condition-case err
            (let ((result (org-babel-execute-src-block)))
              (when (or (not (stringp result))
                        (string-empty-p (string-trim result))
                        (string-match-p "^chat-ai error: " result))
                (setq failures (1+ failures))))
          (error
           (setq failures (1+ failures))
           (message "%s" (error-message-string err))))))
    (princ (buffer-string)))
  (princ (format "\n%s\n" (if (zerop failures)
                              "Every block answered."
                            (format "%d block(s) failed." failures))))
  (kill-emacs (if (zerop failures) 0 1)))

;;; demo.el ends here
